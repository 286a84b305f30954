build-new/obj/checkpoints/adapter_base.o: src/checkpoints/adapter_base.c \
 include/dora/adapter.h include/dora/error.h include/dora/model.h \
 include/dora/safetensors.h include/dora/tensor.h include/dora/hub.h \
 include/dora/run.h src/core/util.h
include/dora/adapter.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/hub.h:
include/dora/run.h:
src/core/util.h:
