build-new/obj/analysis/svd.o: src/analysis/svd.c \
 src/analysis/spectral_int.h include/dora/adapter.h include/dora/error.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/spectral.h include/dora/filter.h include/dora/progress.h \
 include/dora/run.h /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-openmp/openblas_config.h
src/analysis/spectral_int.h:
include/dora/adapter.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/spectral.h:
include/dora/filter.h:
include/dora/progress.h:
include/dora/run.h:
/usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-openmp/openblas_config.h:
