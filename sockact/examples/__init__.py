"""Small apps shipped with sockact for the demo and the tests."""
