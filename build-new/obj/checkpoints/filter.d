build-new/obj/checkpoints/filter.o: src/checkpoints/filter.c \
 include/dora/filter.h include/dora/error.h
include/dora/filter.h:
include/dora/error.h:
