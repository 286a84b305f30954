build-new/obj/plot/htmlpage.o: src/plot/htmlpage.c include/dora/plot.h \
 include/dora/analyze.h include/dora/error.h include/dora/filter.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/quant.h include/dora/adapter.h include/dora/progress.h \
 include/dora/run.h include/dora/stats.h include/dora/version.h \
 src/plot/draw.h src/plot/html.h src/core/util.h
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
include/dora/version.h:
src/plot/draw.h:
src/plot/html.h:
src/core/util.h:
