build-new/obj/cli/cmd_report.o: src/cli/cmd_report.c src/cli/cli.h \
 include/dora/error.h include/dora/filter.h include/dora/progress.h \
 include/dora/plot.h include/dora/analyze.h include/dora/model.h \
 include/dora/safetensors.h include/dora/tensor.h include/dora/quant.h \
 include/dora/adapter.h include/dora/run.h include/dora/stats.h
src/cli/cli.h:
include/dora/error.h:
include/dora/filter.h:
include/dora/progress.h:
include/dora/plot.h:
include/dora/analyze.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/quant.h:
include/dora/adapter.h:
include/dora/run.h:
include/dora/stats.h:
