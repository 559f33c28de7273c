"""Product locators, the catalog, pricing and sales tax."""
