build-new/obj/formats/torchzip.o: src/formats/torchzip.c \
 include/dora/torchzip.h include/dora/error.h include/dora/safetensors.h \
 include/dora/tensor.h include/dora/pickle.h include/dora/guard.h
include/dora/torchzip.h:
include/dora/error.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/pickle.h:
include/dora/guard.h:
