build-new/obj/checkpoints/kohya.o: src/checkpoints/kohya.c \
 src/checkpoints/adapter_int.h include/dora/adapter.h \
 include/dora/error.h include/dora/model.h include/dora/safetensors.h \
 include/dora/tensor.h src/core/le.h src/core/util.h include/dora/notes.h \
 include/dora/run.h
src/checkpoints/adapter_int.h:
include/dora/adapter.h:
include/dora/error.h:
include/dora/model.h:
include/dora/safetensors.h:
include/dora/tensor.h:
src/core/le.h:
src/core/util.h:
include/dora/notes.h:
include/dora/run.h:
