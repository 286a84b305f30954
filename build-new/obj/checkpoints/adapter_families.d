build-new/obj/checkpoints/adapter_families.o: \
 src/checkpoints/adapter_families.c src/checkpoints/adapter_int.h \
 include/dora/adapter.h include/dora/error.h include/dora/model.h \
 include/dora/safetensors.h include/dora/tensor.h
src/checkpoints/adapter_int.h:
include/dora/adapter.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
