"""The HTTP face: routes (one module per resource), authentication, the error envelope, views and paging."""
