build-new/obj/core/guard.o: src/core/guard.c include/dora/guard.h
include/dora/guard.h:
