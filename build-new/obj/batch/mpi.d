build-new/obj/batch/mpi.o: src/batch/mpi.c src/batch/engine.h \
 include/dora/batch.h include/dora/analyze.h include/dora/error.h \
 include/dora/filter.h include/dora/model.h include/dora/safetensors.h \
 include/dora/tensor.h include/dora/quant.h include/dora/adapter.h \
 include/dora/progress.h include/dora/run.h include/dora/join.h \
 include/dora/wire.h include/dora/stats.h src/results/bytes.h
src/batch/engine.h:
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
src/results/bytes.h:
