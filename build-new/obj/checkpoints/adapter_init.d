build-new/obj/checkpoints/adapter_init.o: src/checkpoints/adapter_init.c \
 src/checkpoints/adapter_int.h include/dora/adapter.h \
 include/dora/error.h include/dora/model.h include/dora/safetensors.h \
 include/dora/tensor.h include/dora/guard.h include/dora/run.h
src/checkpoints/adapter_int.h:
include/dora/adapter.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/guard.h:
include/dora/run.h:
