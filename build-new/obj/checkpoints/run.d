build-new/obj/checkpoints/run.o: src/checkpoints/run.c include/dora/run.h \
 include/dora/error.h include/dora/model.h include/dora/safetensors.h \
 include/dora/tensor.h include/dora/adapter.h include/dora/notes.h \
 include/dora/tune_shards.h src/core/util.h
include/dora/run.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
include/dora/adapter.h:
include/dora/notes.h:
include/dora/tune_shards.h:
src/core/util.h:
