build-new/obj/plot/table.o: src/plot/table.c include/dora/plot.h \
 include/dora/analyze.h include/dora/error.h include/dora/filter.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/quant.h include/dora/adapter.h include/dora/progress.h \
 include/dora/run.h include/dora/stats.h include/dora/tidy.h \
 src/plot/draw.h
include/dora/plot.h:
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
include/dora/tidy.h:
src/plot/draw.h:
