build-new/obj/analysis/init_factors.o: src/analysis/init_factors.c \
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
