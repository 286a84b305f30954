build-new/obj/checkpoints/quant_base.o: src/checkpoints/quant_base.c \
 include/dora/quant.h include/dora/adapter.h include/dora/error.h \
 include/dora/model.h include/dora/safetensors.h include/dora/tensor.h \
 include/dora/config.h include/dora/guard.h src/core/util.h
include/dora/quant.h:
include/dora/adapter.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/config.h:
include/dora/guard.h:
src/core/util.h:
