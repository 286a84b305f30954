build-new/obj/checkpoints/align.o: src/checkpoints/align.c \
 include/dora/align.h include/dora/error.h include/dora/model.h \
 include/dora/safetensors.h include/dora/tensor.h include/dora/config.h \
 include/dora/llama_names.h
include/dora/align.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/config.h:
include/dora/llama_names.h:
