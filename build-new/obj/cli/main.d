build-new/obj/cli/main.o: src/cli/main.c src/cli/cli.h \
 include/dora/error.h include/dora/filter.h include/dora/progress.h \
 include/dora/version.h
src/cli/cli.h:
include/dora/error.h:
include/dora/filter.h:
include/dora/progress.h:
include/dora/version.h:
