build-new/obj/checkpoints/adapter.o: src/checkpoints/adapter.c \
 src/checkpoints/adapter_int.h include/dora/adapter.h \
 include/dora/error.h include/dora/model.h include/dora/safetensors.h \
 include/dora/tensor.h src/core/util.h
src/checkpoints/adapter_int.h:
include/dora/adapter.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
src/core/util.h:
