build-new/obj/core/progress.o: src/core/progress.c \
 include/dora/progress.h
include/dora/progress.h:
