build-new/obj/plot/html.o: src/plot/html.c src/plot/html.h \
 include/dora/error.h src/core/util.h
src/plot/html.h:
include/dora/error.h:
src/core/util.h:
