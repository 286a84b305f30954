build-new/obj/plot/figdata.o: src/plot/figdata.c src/plot/draw.h \
 include/dora/analyze.h include/dora/error.h include/dora/filter.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/quant.h include/dora/adapter.h include/dora/progress.h \
 include/dora/run.h include/dora/stats.h
src/plot/draw.h:
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
include/dora/stats.h:
