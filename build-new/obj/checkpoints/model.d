build-new/obj/checkpoints/model.o: src/checkpoints/model.c \
 include/dora/model.h include/dora/error.h include/dora/safetensors.h \
 include/dora/tensor.h include/dora/adapter.h include/dora/guard.h \
 include/dora/hub.h include/dora/tune_shards.h include/dora/torchzip.h \
 src/core/util.h
include/dora/model.h:
include/dora/error.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/adapter.h:
include/dora/guard.h:
include/dora/hub.h:
include/dora/tune_shards.h:
include/dora/torchzip.h:
src/core/util.h:
