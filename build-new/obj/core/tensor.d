build-new/obj/core/tensor.o: src/core/tensor.c include/dora/tensor.h
include/dora/tensor.h:
