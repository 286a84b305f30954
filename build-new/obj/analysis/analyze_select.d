build-new/obj/analysis/analyze_select.o: src/analysis/analyze_select.c \
 src/analysis/analyze_int.h include/dora/adapter.h include/dora/error.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/analyze.h include/dora/filter.h include/dora/quant.h \
 include/dora/progress.h include/dora/run.h include/dora/align.h \
 include/dora/guard.h include/dora/kernel.h include/dora/notes.h \
 src/core/util.h /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-openmp/openblas_config.h
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
include/dora/align.h:
include/dora/guard.h:
include/dora/kernel.h:
include/dora/notes.h:
src/core/util.h:
/usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-openmp/openblas_config.h:
