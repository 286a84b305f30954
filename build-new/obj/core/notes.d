build-new/obj/core/notes.o: src/core/notes.c include/dora/notes.h
include/dora/notes.h:
