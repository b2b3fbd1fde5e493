"""TabuladorMax → Gestão Scouter lead export over PostgREST."""
