build-new/obj/checkpoints/config.o: src/checkpoints/config.c \
 include/dora/config.h include/dora/error.h include/dora/model.h \
 include/dora/safetensors.h include/dora/tensor.h src/core/util.h
include/dora/config.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
src/core/util.h:
