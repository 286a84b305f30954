build-new/obj/analysis/spectral_cache.o: src/analysis/spectral_cache.c \
 src/analysis/spectral_int.h include/dora/adapter.h include/dora/error.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/spectral.h include/dora/filter.h include/dora/progress.h \
 include/dora/run.h src/core/le.h src/core/util.h include/dora/version.h
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
src/core/le.h:
src/core/util.h:
include/dora/version.h:
