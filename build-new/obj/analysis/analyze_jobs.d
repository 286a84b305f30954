build-new/obj/analysis/analyze_jobs.o: src/analysis/analyze_jobs.c \
 src/analysis/analyze_int.h include/dora/adapter.h include/dora/error.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/analyze.h include/dora/filter.h include/dora/quant.h \
 include/dora/progress.h include/dora/run.h include/dora/guard.h \
 include/dora/kernel.h src/core/util.h \
 /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-openmp/openblas_config.h
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
include/dora/guard.h:
include/dora/kernel.h:
src/core/util.h:
/usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-openmp/openblas_config.h:
