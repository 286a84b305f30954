build-new/obj/checkpoints/fused.o: src/checkpoints/fused.c \
 include/dora/fused.h include/dora/config.h include/dora/error.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 src/core/util.h
include/dora/fused.h:
include/dora/config.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
src/core/util.h:
