"""Local API gateway speaking Supabase's REST, Auth and Functions protocols."""
