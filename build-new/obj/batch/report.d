build-new/obj/batch/report.o: src/batch/report.c include/dora/batch.h \
 include/dora/analyze.h include/dora/error.h include/dora/filter.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/quant.h include/dora/adapter.h include/dora/progress.h \
 include/dora/run.h include/dora/join.h include/dora/wire.h \
 include/dora/stats.h include/dora/version.h src/batch/common.h \
 src/results/bytes.h
include/dora/batch.h:
include/dora/analyze.h:
include/dora/error.h:
include/dora/filter.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/quant.h:
include/dora/adapter.h:
include/dora/progress.h:
include/dora/run.h:
include/dora/join.h:
include/dora/wire.h:
include/dora/stats.h:
include/dora/version.h:
src/batch/common.h:
src/results/bytes.h:
