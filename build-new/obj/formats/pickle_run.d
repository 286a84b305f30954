build-new/obj/formats/pickle_run.o: src/formats/pickle_run.c \
 src/formats/pickle_int.h include/dora/pickle.h include/dora/error.h \
 include/dora/tensor.h src/core/le.h
src/formats/pickle_int.h:
include/dora/pickle.h:
include/dora/error.h:
include/dora/tensor.h:
src/core/le.h:
