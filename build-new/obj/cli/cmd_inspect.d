build-new/obj/cli/cmd_inspect.o: src/cli/cmd_inspect.c src/cli/cli.h \
 include/dora/error.h include/dora/filter.h include/dora/progress.h \
 include/dora/adapter.h include/dora/model.h include/dora/safetensors.h \
 include/dora/tensor.h include/dora/h5in.h include/dora/analyze.h \
 include/dora/quant.h include/dora/run.h include/dora/h5out.h \
 src/core/util.h
src/cli/cli.h:
include/dora/error.h:
include/dora/filter.h:
include/dora/progress.h:
include/dora/adapter.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/h5in.h:
include/dora/analyze.h:
include/dora/quant.h:
include/dora/run.h:
include/dora/h5out.h:
src/core/util.h:
