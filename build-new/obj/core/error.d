build-new/obj/core/error.o: src/core/error.c include/dora/error.h
include/dora/error.h:
