"""servestack's Pulumi program, its components and the `servestack` command line."""
