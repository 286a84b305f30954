build-new/obj/checkpoints/llama_names.o: src/checkpoints/llama_names.c \
 include/dora/llama_names.h
include/dora/llama_names.h:
