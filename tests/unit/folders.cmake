# Unit-test binaries of the daemon folders: tern_unit_tests(<folder> <libraries>...)
tern_unit_tests(mta tern-mta-lib)
tern_unit_tests(authd tern-authd-lib)
