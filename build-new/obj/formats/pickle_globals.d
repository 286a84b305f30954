build-new/obj/formats/pickle_globals.o: src/formats/pickle_globals.c \
 src/formats/pickle_int.h include/dora/pickle.h include/dora/error.h \
 include/dora/tensor.h
src/formats/pickle_int.h:
include/dora/pickle.h:
include/dora/error.h:
include/dora/tensor.h:
