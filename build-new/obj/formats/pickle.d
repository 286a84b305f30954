build-new/obj/formats/pickle.o: src/formats/pickle.c \
 src/formats/pickle_int.h include/dora/pickle.h include/dora/error.h \
 include/dora/tensor.h
src/formats/pickle_int.h:
include/dora/pickle.h:
include/dora/error.h:
include/dora/tensor.h:
