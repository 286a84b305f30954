build-new/obj/checkpoints/quant_saved.o: src/checkpoints/quant_saved.c \
 include/dora/guard.h include/dora/quant.h include/dora/adapter.h \
 include/dora/error.h include/dora/model.h include/dora/safetensors.h \
 include/dora/tensor.h
include/dora/guard.h:
include/dora/quant.h:
include/dora/adapter.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
