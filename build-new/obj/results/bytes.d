build-new/obj/results/bytes.o: src/results/bytes.c src/results/bytes.h \
 src/core/le.h
src/results/bytes.h:
src/core/le.h:
