build-new/obj/analysis/spectral_module.o: src/analysis/spectral_module.c \
 src/analysis/spectral_int.h include/dora/adapter.h include/dora/error.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/spectral.h include/dora/filter.h include/dora/progress.h \
 include/dora/run.h include/dora/analyze.h include/dora/quant.h \
 include/dora/guard.h include/dora/kernel.h include/dora/notes.h \
 src/core/util.h src/analysis/analyze_int.h \
 /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h \
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
include/dora/analyze.h:
include/dora/quant.h:
include/dora/guard.h:
include/dora/kernel.h:
include/dora/notes.h:
src/core/util.h:
src/analysis/analyze_int.h:
/usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-openmp/openblas_config.h:
