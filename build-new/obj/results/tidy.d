build-new/obj/results/tidy.o: src/results/tidy.c include/dora/tidy.h \
 include/dora/analyze.h include/dora/error.h include/dora/filter.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/quant.h include/dora/adapter.h include/dora/progress.h \
 include/dora/run.h include/dora/h5out.h src/core/util.h
include/dora/tidy.h:
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
include/dora/h5out.h:
src/core/util.h:
