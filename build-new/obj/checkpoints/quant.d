build-new/obj/checkpoints/quant.o: src/checkpoints/quant.c \
 include/dora/quant.h include/dora/adapter.h include/dora/error.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h
include/dora/quant.h:
include/dora/adapter.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
