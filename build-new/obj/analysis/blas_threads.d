build-new/obj/analysis/blas_threads.o: src/analysis/blas_threads.c \
 src/analysis/analyze_int.h include/dora/adapter.h include/dora/error.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/analyze.h include/dora/filter.h include/dora/quant.h \
 include/dora/progress.h include/dora/run.h
src/analysis/analyze_int.h:
include/dora/adapter.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/analyze.h:
include/dora/filter.h:
include/dora/quant.h:
include/dora/progress.h:
include/dora/run.h:
