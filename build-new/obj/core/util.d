build-new/obj/core/util.o: src/core/util.c src/core/util.h \
 include/dora/error.h
src/core/util.h:
include/dora/error.h:
