build-new/obj/cli/cmd_batch.o: src/cli/cmd_batch.c src/cli/cli.h \
 include/dora/error.h include/dora/filter.h include/dora/progress.h \
 include/dora/batch.h include/dora/analyze.h include/dora/model.h \
 include/dora/safetensors.h include/dora/tensor.h include/dora/quant.h \
 include/dora/adapter.h include/dora/run.h include/dora/join.h \
 include/dora/wire.h include/dora/stats.h src/core/util.h
src/cli/cli.h:
include/dora/error.h:
include/dora/filter.h:
include/dora/progress.h:
include/dora/batch.h:
include/dora/analyze.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/quant.h:
include/dora/adapter.h:
include/dora/run.h:
include/dora/join.h:
include/dora/wire.h:
include/dora/stats.h:
src/core/util.h:
