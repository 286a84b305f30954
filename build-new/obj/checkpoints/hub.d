build-new/obj/checkpoints/hub.o: src/checkpoints/hub.c include/dora/hub.h \
 include/dora/error.h src/core/util.h
include/dora/hub.h:
include/dora/error.h:
src/core/util.h:
