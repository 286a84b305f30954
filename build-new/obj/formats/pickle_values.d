build-new/obj/formats/pickle_values.o: src/formats/pickle_values.c \
 src/formats/pickle_int.h include/dora/pickle.h include/dora/error.h \
 include/dora/tensor.h
src/formats/pickle_int.h:
include/dora/pickle.h:
include/dora/error.h:
include/dora/tensor.h:
