"""A synthetic world of coloured shapes for measuring visual blindness."""
