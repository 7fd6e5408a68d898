"""One construct per concern; `infra.stacks.petrel_stack` assembles them."""
