build-new/obj/analysis/analyze_reshape.o: src/analysis/analyze_reshape.c \
 src/analysis/analyze_int.h include/dora/adapter.h include/dora/error.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/analyze.h include/dora/filter.h include/dora/quant.h \
 include/dora/progress.h include/dora/run.h include/dora/config.h \
 include/dora/fused.h include/dora/guard.h include/dora/llama_names.h \
 include/dora/notes.h
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
include/dora/config.h:
include/dora/fused.h:
include/dora/guard.h:
include/dora/llama_names.h:
include/dora/notes.h:
