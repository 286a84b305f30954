build-new/obj/formats/safetensors.o: src/formats/safetensors.c \
 include/dora/safetensors.h include/dora/error.h include/dora/tensor.h \
 src/core/le.h
include/dora/safetensors.h:
include/dora/error.h:
include/dora/tensor.h:
src/core/le.h:
