build-new/obj/cli/cmd_analyze.o: src/cli/cmd_analyze.c src/cli/cli.h \
 include/dora/error.h include/dora/filter.h include/dora/progress.h \
 include/dora/align.h include/dora/model.h include/dora/safetensors.h \
 include/dora/tensor.h include/dora/analyze.h include/dora/quant.h \
 include/dora/adapter.h include/dora/run.h include/dora/tidy.h \
 src/core/util.h
src/cli/cli.h:
include/dora/error.h:
include/dora/filter.h:
include/dora/progress.h:
include/dora/align.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/analyze.h:
include/dora/quant.h:
include/dora/adapter.h:
include/dora/run.h:
include/dora/tidy.h:
src/core/util.h:
