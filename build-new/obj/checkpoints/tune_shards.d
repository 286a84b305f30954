build-new/obj/checkpoints/tune_shards.o: src/checkpoints/tune_shards.c \
 include/dora/tune_shards.h include/dora/error.h src/core/util.h
include/dora/tune_shards.h:
include/dora/error.h:
src/core/util.h:
